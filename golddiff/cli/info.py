"""`python -m golddiff info`: versions, the devices torch and faiss see, the cache, the datasets."""

from __future__ import annotations


def cmd_info(args) -> int:
    import torch

    from .. import __version__, data

    print(f"golddiff   {__version__}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    print(f"torch      {torch.__version__} (CUDA GPUs seen: {gpus})")
    try:
        import faiss

        faiss_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        print(f"faiss      {faiss.__version__} (GPUs seen: {faiss_gpus})")
    except ImportError:
        print("faiss      not installed")
    print(f"device     {data.device_label(data.pick_device(None))}")
    print(f"cache      {data.cache_dir()}")
    print(f"data dirs  {', '.join(data.data_roots())}  (each /<name>, in this order)")
    print(
        "datasets:   (also folder:PATH or folder:PATH?res=R for a folder of images; RAM: what a"
        " loaded corpus holds; out-of-core sets read their uint8 images from the disk cache)"
    )
    for line in data.describe_datasets():
        print("  " + line)
    return 0
