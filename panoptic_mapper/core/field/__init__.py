"""The neural panoptic field of the refined map (PanopticRecon++), pure PyTorch, ROS-free.

Modules, from the bottom up:

* ``config``: one config dataclass per component; ``classes``: label ids <-> classifier indices;
* ``_torch_ref`` / ``encodings``: the multiresolution hash grid (pure torch; tiny-cuda-nn when
  present);
* ``gaussian_tokens``: instance tokens as 3D Gaussians and the Gaussian-modulated attention mask;
* ``panoptic_field``: the SDF, semantic and instance-key volumes (``FieldOutput``);
* ``panoptic_head``: the Bayes panoptic head and the inference rules;
* ``rendering``: depth-guided and full volume rendering with NeuS weights;
* ``matching`` / ``losses``: Hungarian mask-token assignment and the loss terms;
* ``token_init`` / ``token_manager``: where tokens start; prune / split / spawn with stable ids;
* ``keyframes`` / ``schedule`` / ``trainer``: keyframe storage and rays, the loss schedule, the
  resumable, thread-safe trainer, whose step is split into ``step_context`` (what the loss terms
  share), ``geometry_losses``, ``prior_distill``, ``segmentation_losses`` with
  ``frame_matching`` (per-frame Hungarian matching, covered tokens), ``token_maintenance``,
  ``optimizer`` and ``checkpoint``;
* ``instance_ids``: published ids that keep the prior map's ids; ``appearance``: the optional
  gsplat colour branch (CUDA only).

The map facade that uses all this is ``panoptic_mapper.core.mapping.refined_map``.
"""
