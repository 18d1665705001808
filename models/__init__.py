"""The shipped models and their build scripts. imaging first: it sets OpenCV's pixel limit,
read when cv2 is imported."""
import imaging  # noqa: F401
