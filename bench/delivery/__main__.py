from bench.delivery.cli import main

main()
