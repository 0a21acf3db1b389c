from tinv_cli.cli import main

main()
