"""lava: hosts that are a device type of a LAVA lab (kind `lava`): the REST API (`api`), the job
definition kbisect renders for a build (`definition`) and the host driver (`host`)."""
