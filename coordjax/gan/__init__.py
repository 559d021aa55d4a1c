"""The paper's generative claim (S7.1): a CoordConv GAN against a conv GAN on two-object
Sort-of-Clevr images, as an experiment of the sweep engine's seam.

* :mod:`coordjax.gan.data`: the dataset (one red and one blue object per image);
* :mod:`coordjax.gan.models`: Table S4's generators and discriminators;
* :mod:`coordjax.gan.metrics`: the numbers for "mode collapse" (object positions of samples);
* :mod:`coordjax.gan.experiment`: the recipe and :data:`~coordjax.gan.experiment.EXPERIMENT`.
"""
