from instructgen.cli import main

main()
