"""Model selection: ``lmforge compare`` trains or prompts each candidate on the same split and
reports quality, size, speed and memory, with a recommendation."""
