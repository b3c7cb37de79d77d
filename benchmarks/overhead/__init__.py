"""What does the gateway add to a request? ``python -m benchmarks.overhead`` (see cli.py).

Modules: cli (arguments, the run), runner (interleaved rounds), targets (what is measured),
loadgen (wrk, h2load, the TTFB client), nginx (the upstream), procs (processes, cores, CPU),
stats (records summarised over rounds), report and checks (the markdown and its targets),
profiling (py-spy flame graphs), litellm_proxy (the LiteLLM comparison's venv), passthrough_*
(the minimal proxies that set the floor).
"""
