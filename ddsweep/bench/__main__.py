from ddsweep.bench import main

main()
