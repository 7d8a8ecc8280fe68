"""Reading data files into typed records; splits; batching."""
