"""What the process runs on: device choice, CPU threads, the allocator, signals and interrupts."""
