"""Draw each class: images synthesised by gradient ascent on a trained network (feature visualisation).

In the spirit of Lucid's optvis, built from small parts that can be swapped independently, one module each:

  param         PixelImage, FourierImage (default),       the trainable tensor -> images in [0, 1]
                MacoImage (phase only)
  transforms    pad, jitter, scale, rotate                 random each step, so the image must work
                                                           under small shifts, not only pixel-exactly
  objectives    class_logit, class_margin, channel,       scores to maximise; compose with +, - and *
                unit, diversity, l2, total_variation, blur
  loop          render(): one Adam loop with a tqdm bar, deterministic for a seed; one network or a
                list of them (the ensemble objective: their mean logits)
  draw          Settings, draw_classes, draw_units         the tuned defaults of `heritage generate`;
                ENSEMBLE_SETTINGS                          with a list of networks (the ensemble)
  files         write_generated, class_stems               PNGs (one file name per class), the grid, the JSON;
                publish_generated                          `heritage generate`'s folder, whole or not at all

`draw_classes()` puts them together with the defaults of `heritage generate` (`Settings`, tuned on the
shipped model; figures in docs/synthesis.md). Unregularised ascent on raw pixels finds high-frequency
patterns that fool the generating network only; the Fourier parametrisation (which scales steps down
with frequency), decorrelated colour and the transforms push it towards images other networks agree on.
"""
