"""`smolconv batch`: many models from one recipe file, here (run.py), as a GitHub Actions matrix or as Hugging Face
Jobs (remote.py). recipe.py reads and checks the file."""
