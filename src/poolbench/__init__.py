"""poolbench: which pooling of a transformer's hidden states should feed a sentiment classifier?"""

__version__ = "0.1.0"
