"""HonestFace (paper 003): one-step diffusion face restoration guided by reference photos of the same person.

- :mod:`.backbone`: VAE encoder -> one UNet evaluation at t = 399 -> x0 from eps (float64) -> VAE decoder, LoRA rank 16
  / alpha 16 (``diffusers``, ``peft``: the ``[diffusion]`` extra); the SD 2.1-base configuration from the zoo entry
  ``sd21-base`` and our compact configuration;
- :mod:`.prompt`: the prompt embedding p (VRE eq. 7, facial feature extractor on the eyes of r0 chosen by A-LD,
  face identity encoder with attention pooling, fusion; 4 / 7 / 77 tokens);
- :mod:`.model`: the network, reference preparation, weights files;
- :mod:`.train`: CPU training in resumable chunks (eq. 5, 8-13); :mod:`.restorer`: the ``honestface`` method.
"""
