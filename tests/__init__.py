import os

# Our Hub stand-in (tests/hub_standin.py) speaks Git LFS, not Xet. huggingface_hub reads its own
# switch once, when first imported, which this package's import precedes.
os.environ["HF_HUB_DISABLE_XET"] = "1"
