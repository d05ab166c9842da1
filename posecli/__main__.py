from posecli.cli import main

main()
