"""kbisect: find and compare kernel regressions on Xen.

One module per stage, data flowing one way:
config -> tree -> build -> lab -> jobs -> results -> report/browser; bisect and pipeline drive them.
"""

__version__ = "0.1.0"
