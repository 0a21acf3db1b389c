"""``tinv search``: concepts on the Hub, by the concepts library or by anyone."""

from __future__ import annotations

from dataclasses import dataclass

from tinv_cli.errors import HubError
from tinv_cli.hub.errors import hub_errors

DEFAULT_AUTHOR = "sd-concepts-library"


@dataclass(frozen=True)
class SearchHit:
    repo_id: str
    downloads: int | None
    likes: int | None
    updated: str | None
    private: bool


# Search


def search(
    text: str, *, author: str | None = DEFAULT_AUTHOR, limit: int = 20, token: str | None = None
) -> list[SearchHit]:
    """Models whose id contains ``text``, by ``author`` (None: anyone), most relevant first as the Hub ranks."""
    from huggingface_hub import HfApi, is_offline_mode

    if is_offline_mode():
        raise HubError("cannot search: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE (or set it to 0)")
    api = HfApi(token=token)
    with hub_errors("search", None, token):
        models = list(api.list_models(search=text or None, author=author or None, limit=limit))
    hits = []
    for model in models:
        when = model.last_modified or model.created_at
        hits.append(
            SearchHit(
                model.id,
                model.downloads,
                model.likes,
                when.strftime("%Y-%m-%d") if when else None,
                bool(model.private),
            )
        )
    return hits
