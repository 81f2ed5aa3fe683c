"""flotilla bench: workloads, contenders and reports (imported only by the CLI)."""
