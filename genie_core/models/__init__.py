"""The networks and what builds them: the video tokenizer (with its LFQ quantiser, discriminator
and losses), the latent action model (with its VQ), the dynamics model and its sampler, the
world bundle, the shared ``layers``, window-by-window encoding, and ``load`` (kind -> class,
``load_checkpoint``). Imports ``io`` and the top-level modules, never ``training`` or ``tasks``."""
