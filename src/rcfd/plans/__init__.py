"""Many runs at once: sweeps, the demo plan and seeds."""
