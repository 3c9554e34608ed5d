"""The TFRecord output's names: split folders, shard names, the Object Detection API's feature
keys and the `--layout` names, in one place for the writer, the files beside the records
(`converter.sinks.training_stacks`) and the checks `verify` runs.
"""

from __future__ import annotations

from converter.core.split import SplitName

SPLIT_FOLDERS: dict[SplitName, str] = {"train": "tfrecord_train", "validation": "tfrecord_val", "test": "tfrecord_test"}
SHARD_PREFIXES: dict[SplitName, str] = {"train": "train", "validation": "val", "test": "test"}
SHARD_SUFFIX = ".tfrecord"

# The Object Detection API keys, in one place.
IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_SOURCE_KEY = "image/source_key"
IMAGE_SHA256 = "image/key/sha256"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_YMAX = "image/object/bbox/ymax"
OBJECT_CLASS_LABEL = "image/object/class/label"
OBJECT_CLASS_TEXT = "image/object/class/text"
OBJECT_AREA = "image/object/area"
OBJECT_IS_CROWD = "image/object/is_crowd"
IMAGE_CLASS_LABEL = "image/class/label"
IMAGE_CLASS_TEXT = "image/class/text"
SEGMENTATION_ENCODED = "image/segmentation/class/encoded"
SEGMENTATION_FORMAT = "image/segmentation/class/format"
OBJECT_MASK = "image/object/mask"
# Free-standing keypoints (Label Studio's): not `image/object/keypoint/*`, which the Object
# Detection API reads as `[num_boxes, num_keypoints]` points belonging to the boxes.
KEYPOINT_X = "image/keypoint/x"
KEYPOINT_Y = "image/keypoint/y"
KEYPOINT_TEXT = "image/keypoint/text"
# Keypoints of objects (COCO's), as the Object Detection API's COCO converter writes them: every
# object has `keypoints_per_object` entries (padded with unlabelled points at 0, 0), in object order.
OBJECT_KEYPOINT_X = "image/object/keypoint/x"
OBJECT_KEYPOINT_Y = "image/object/keypoint/y"
OBJECT_KEYPOINT_VISIBILITY = "image/object/keypoint/visibility"
OBJECT_KEYPOINT_NUM = "image/object/keypoint/num"
OBJECT_KEYPOINT_TEXT = "image/object/keypoint/text"
OBJECT_KEYPOINT_KEYS = (
    OBJECT_KEYPOINT_X,
    OBJECT_KEYPOINT_Y,
    OBJECT_KEYPOINT_VISIBILITY,
    OBJECT_KEYPOINT_NUM,
    OBJECT_KEYPOINT_TEXT,
)
OD_API_KEYS = (
    IMAGE_ENCODED,
    IMAGE_FORMAT,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    IMAGE_FILENAME,
    IMAGE_SOURCE_ID,
    IMAGE_SOURCE_KEY,
    IMAGE_SHA256,
    BBOX_XMIN,
    BBOX_XMAX,
    BBOX_YMIN,
    BBOX_YMAX,
    OBJECT_CLASS_LABEL,
    OBJECT_CLASS_TEXT,
    OBJECT_AREA,
    OBJECT_IS_CROWD,
    IMAGE_CLASS_LABEL,
    IMAGE_CLASS_TEXT,
)  # every record carries all of these; the segmentation keys only records with a mask


# `--layout` values, and the names dataset_info.yaml's record_layout gives them.
OBJECT_DETECTION_API = "object-detection-api"
MODELPACK = "modelpack"
LAYOUT_NAMES = {OBJECT_DETECTION_API: "object_detection_api", MODELPACK: "modelpack"}
