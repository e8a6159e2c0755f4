"""kernels (Hugging Face's kernel hub client; transformers >= 5 imports it, and diffusers' pipelines
import transformers): it opens `_internals/python_depends.json` beside its own code at import time,
and PyInstaller only collects code, so the bundle would fail every model load without this."""

from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("kernels") + copy_metadata("kernels")
