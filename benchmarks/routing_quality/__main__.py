from benchmarks.routing_quality.run import main

main()
