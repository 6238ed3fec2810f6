import numpy as np, keras
from keras_sam3 import SAM3PromptableConceptImageSegmenter, SAM3Backbone
for dt in ["bfloat16", "float16"]:
    seg = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes", dtype=dt)
    print(keras.backend.backend(), "requested", dt, "backbone policy:", seg.backbone.dtype_policy.name,
          "vision_encoder policy:", seg.backbone.vision_encoder.dtype_policy.name,
          "variable dtypes:", sorted({v.dtype for v in seg.backbone.weights}))
    img = (np.random.default_rng(0).uniform(0,255,(128,128,3))).astype("uint8")
    out = seg.predict({"images": img[None], "prompts": ["red circle"]}, verbose=0)
    print("   predict scores dtype:", out["scores"].dtype)
