from kbisect.cli import main

main()
