"""ufl: unsupervised feature learning.

Stages (each a subpackage and a CLI verb):
``ufl.pipeline`` (Beam preprocessing), ``ufl.trainers`` (sparse coding, autoencoders, Földiák, the
training loop), ``ufl.export`` (SavedModel export, TF-Serving compatible server, feature reuse).
"""
__version__ = "0.1.0"
