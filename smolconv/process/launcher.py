"""Run as `python -I -S launcher.py PARENT_PID PROGRAM ARGV...`: tie PROGRAM to its parent's life, then exec it.

PR_SET_PDEATHSIG(SIGKILL) survives exec, so the program dies when smolconv does, SIGKILL included. If the
parent died between the fork and the prctl, the parent id has changed and nothing is exec'd. Standard library
only, and nothing imported beyond what the exec needs: this runs before every child smolconv starts.
"""

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0 or os.getppid() != int(sys.argv[1]):
    os._exit(126)
try:
    os.execv(sys.argv[2], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"{sys.argv[2]}: {exc.strerror}\n")
    os._exit(127)
