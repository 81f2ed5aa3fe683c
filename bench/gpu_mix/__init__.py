"""The GPU-mix benchmark (``flotilla bench --suite optimizer``): Mélange's evaluation on simulated GPUs."""
