"""Loading an SD 1.5-sized single-file checkpoint with ``from_single_file`` beside the same weights as a diffusers
folder with ``from_pretrained``: wall time and peak RSS of the load, each in a fresh process.

    python benchmarks/single_file_load.py --repeats 3 [--work /tmp/sf-bench]

The model is SD 1.5's architecture (tinv's shipped configs: UNet, VAE, CLIP-L) with random weights, stored in
fp16 (about 2 GB each way) and loaded in fp16 on the CPU. The single file is read the way tinv reads one:
``StableDiffusionPipeline.from_single_file(file, config=<shipped folder>, local_files_only=True)``. The two
loaders alternate, so a warm page cache favours neither; the first pass of each warms it and is not counted.
Prints a markdown table with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from diffusers import StableDiffusionPipeline
import diffusers.utils.logging as logging
logging.set_verbosity_error(); logging.disable_progress_bar()
kind, source, config = sys.argv[1:4]
start = time.perf_counter()
if kind == "single_file":
    pipe = StableDiffusionPipeline.from_single_file(
        source, config=config, local_files_only=True, torch_dtype=torch.float16, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
else:
    pipe = StableDiffusionPipeline.from_pretrained(
        source, local_files_only=True, torch_dtype=torch.float16, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
seconds = time.perf_counter() - start
params = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
print(json.dumps({"seconds": seconds, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "params": params}))
"""


def build(work: Path) -> tuple[Path, Path, Path]:
    """The random-weight SD 1.5 as a diffusers folder and as one LDM-layout file; the shipped config folder."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(ROOT))
    from tests.ldm_layout import pipeline_to_ldm
    from tinv_cli.models.shipped_configs import config_folder

    os.environ.setdefault("TINV_HOME", str(work / "home"))
    config = config_folder("stable-diffusion-v1-5")
    folder, checkpoint = work / "folder", work / "sd15-random.safetensors"
    if (folder / "model_index.json").is_file() and checkpoint.is_file():
        return folder, checkpoint, config
    torch.manual_seed(0)
    with torch.no_grad():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
        from diffusers import PNDMScheduler

        pipe = StableDiffusionPipeline(
            vae=vae.half(),
            text_encoder=text.half(),
            tokenizer=CLIPTokenizer.from_pretrained(config / "tokenizer"),
            unet=unet.half(),
            scheduler=PNDMScheduler.from_pretrained(config / "scheduler"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(folder)
        save_file(pipeline_to_ldm(pipe), str(checkpoint))
    return folder, checkpoint, config


def measure(kind: str, source: Path, config: Path) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(source), str(config)],
        check=True,
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if v},
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where the two copies go (about 4 GB)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sf-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder, checkpoint, config = build(work)
    sources = {
        "from_pretrained (diffusers folder)": ("folder", folder),
        "from_single_file": ("single_file", checkpoint),
    }
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in sources}
    for repeat in range(args.repeats + 1):
        for label, (kind, source) in sources.items():
            result = measure(kind, source, config)
            if repeat:  # the first pass warms the page cache for both
                runs[label].append(result)
    size = {
        label: sum(p.stat().st_size for p in Path(s).rglob("*") if p.is_file())
        if Path(s).is_dir()
        else Path(s).stat().st_size
        for label, (_, s) in sources.items()
    }
    command = "python benchmarks/single_file_load.py " + " ".join(sys.argv[1:])
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"Command: `{command}`\n")
    print("| loader | on disk | load time, median (min-max) | peak RSS, median |")
    print("|---|---|---|---|")
    for label, results in runs.items():
        seconds = [r["seconds"] for r in results]
        rss = statistics.median(r["peak_rss_kb"] for r in results) / 1024**2
        print(
            f"| {label} | {size[label] / 1e9:.2f} GB | {statistics.median(seconds):.1f} s "
            f"({min(seconds):.1f}-{max(seconds):.1f}) | {rss:.2f} GB |"
        )
    params = {r["params"] for results in runs.values() for r in results}
    print(
        f"\n{args.repeats} timed runs each after one warm-up run; {params.pop():,} parameters, fp16 on disk."
    )


if __name__ == "__main__":
    main()
