"""The experiment pipeline: its plan (plan), running stages and the plan (runner), MLflow (tracking)."""
