from benchmarks.test_time_compute.run import main

raise SystemExit(main())
