"""Signature names, input and output keys of exported ufl models; imported by exporter, server and client."""

SERVING_DEFAULT = "serving_default"
RECONSTRUCT = "reconstruct"
ENCODE_IMAGES = "encode_images"

PATCHES_INPUT = "patches"
IMAGES_INPUT = "images"
CODES_OUTPUT = "codes"
RECONSTRUCTION_OUTPUT = "reconstruction"
FEATURES_OUTPUT = "features"

UFL_ASSET = "ufl.json"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CONFIG_FILE = "models.config"
BATCHING_CONFIG_FILE = "batching.config"

#: The input and output keys of each ufl signature (clients pick the output to return by it).
SIGNATURE_KEYS = {
    SERVING_DEFAULT: (PATCHES_INPUT, CODES_OUTPUT),
    RECONSTRUCT: (PATCHES_INPUT, RECONSTRUCTION_OUTPUT),
    ENCODE_IMAGES: (IMAGES_INPUT, FEATURES_OUTPUT),
}
