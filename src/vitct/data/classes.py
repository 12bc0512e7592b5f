"""The two classes, as the Kaggle layout names their folders; COVID is the positive class."""

CLASS_DIRS = ("COVID", "non-COVID")  # class folder names
CLASS_NAMES = ("non-COVID", "COVID")  # index = label
POSITIVE_LABEL = 1


def label_of(class_dir: str) -> int:
    return CLASS_NAMES.index(class_dir)
