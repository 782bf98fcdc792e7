"""The fleet: devices, provisioning, configuration, commands, rollouts, alerts and telemetry."""
