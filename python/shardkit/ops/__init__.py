"""Native ops, declared once with ``torch.library`` under ``torch.ops.shardkit``.

Every module in this package that does not start with ``_`` defines one family
of ops: the schema, a fake (meta) kernel, the plain-torch reference registered
as the default kernel (the spec, and the fallback without the native core),
and the validated ``cpu``/``cuda`` kernels that call ``shardkit._C``/``_C_cuda``.
Importing this package registers them all.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
