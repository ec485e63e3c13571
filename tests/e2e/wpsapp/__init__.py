"""A small PyWPS application that behaves like a birdhouse WPS (flyingpigeon, emu) where it
matters to Roost: jobs leave files on the machine that ran them.

- ``fetch`` downloads (here: makes up) a dataset into this server's local cache and returns
  the cache key;
- ``subset`` reads a cached dataset by key, and fails on a server that does not have it;
- ``sleep`` is a slow job with status updates, for asynchronous execution.

Every process reports which server ran it (output ``server``), so tests can tell.
"""
