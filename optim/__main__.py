from optim.cli import main

main()
