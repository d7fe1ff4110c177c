"""Process lifetime: smolconv's children never outlive it, and its stop signals stop it in order.

`children` starts every child through one spawner thread and a launcher that ties it to smolconv's life;
`signals` turns Ctrl-C, SIGTERM and SIGHUP into an exception on the main thread. `launcher.py` and
`supervisor.py` are small programs the children exec through (run as scripts, never imported).
"""
