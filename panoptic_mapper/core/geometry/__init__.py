"""Geometry shared by the whole package.

* ``camera``: pinhole projection and back-projection (pixel <-> camera <-> world), rays through
  pixels, rigid transforms of points, and the Open3D ray-casting camera matrix; the project's
  pixel-centre and depth conventions are documented there.
"""
