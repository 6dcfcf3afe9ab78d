"""Training of model drafters (`hvd train drafter`): data, losses, the loop."""
