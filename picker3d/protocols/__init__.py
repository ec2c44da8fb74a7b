"""picker3d protocols, one per file."""
from .protocol_classify import ProtPicker3DClassify
from .protocol_evaluate import ProtPicker3DEvaluate
from .protocol_export_copick import ProtPicker3DExportCopick
from .protocol_import_annotations import ProtPicker3DImportAnnotations
from .protocol_import_copick import ProtPicker3DImportCopick
from .protocol_import_model import ProtPicker3DImportModel
from .protocol_masks import ProtPicker3DMasks
from .protocol_pick import ProtPicker3DPick
from .protocol_train import ProtPicker3DTrain

__all__ = ["ProtPicker3DImportAnnotations", "ProtPicker3DMasks", "ProtPicker3DTrain", "ProtPicker3DPick",
           "ProtPicker3DImportModel", "ProtPicker3DClassify", "ProtPicker3DEvaluate",
           "ProtPicker3DImportCopick", "ProtPicker3DExportCopick"]
