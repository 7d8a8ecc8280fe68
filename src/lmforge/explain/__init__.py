"""``lmforge explain``: token attributions for a run's predictions, computed by captum (Integrated
Gradients, gradient x input, occlusion) or read from the model's attention, with faithfulness
measured by deletion curves against a random order."""
