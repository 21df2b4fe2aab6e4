"""jobs: what runs on a booted host (the grant-map stress program and its parser) and the
console/dmesg classifier."""
