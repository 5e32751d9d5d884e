"""edge.yaml, the environment and the command line, validated: `EdgeConfig`."""
