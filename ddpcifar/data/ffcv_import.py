"""Import FFCV without its side effect on torch.

`ffcv.pipeline.compiler` calls `torch.set_num_threads(1)` when it is first imported, so a
one-process run that merely imported FFCV trained on one core whatever the machine had. Import
this module before any `ffcv` module: it loads FFCV's compiler once and puts torch's intra-op
thread count back.
"""

import torch

_threads = torch.get_num_threads()
import ffcv.pipeline.compiler  # noqa: E402,F401  (the import that changes the thread count)

torch.set_num_threads(_threads)
