"""Building blocks of the Terraform integration: CLI arguments, events, plans, provider mirror."""
