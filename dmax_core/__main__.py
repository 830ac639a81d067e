from dmax_core.cli import main

main()
