"""Prediction on Dask (``dask.distributed``): one huge image cut into chunks that carry the
network's halo, or many files spread over the workers. No scheduler of our own.

- :mod:`.cluster`: ``local[:N]``, ``cuda[:N]``, ``tcp://HOST:PORT`` or ``SCHEDULER.json`` -> a Client;
- :mod:`.plugin`: each worker loads the model once, from its own verified cache;
- :mod:`.chunks`: one image, chunked; workers write their cores into the output OME-Zarr;
- :mod:`.instances`: instance labels per chunk, matched across seams, relabelled globally;
- :mod:`.files`: many files, with the folder mode's manifest and summary.

Imports are lazy: nothing here imports dask until it is used.
"""
