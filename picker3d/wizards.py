"""Wizards: particle diameters from the input coordinates' box size."""
import pyworkflow.wizard as pwizard

from .protocols import ProtPicker3DMasks, ProtPicker3DTrain


def diameters_from_coordinates(coords):
    """'name=BOX,...' for every class of a coordinate set (its box size as the diameter)."""
    from .protocols.protocol_base import ProtPicker3DBase
    box = coords.getBoxSize()
    if not box:
        return ""
    return ",".join(f"{c}={box}" for c in ProtPicker3DBase._coordinateClasses(coords))


class Picker3DDiameterWizard(pwizard.Wizard):
    """Fill 'Diameters (px)' with the input coordinates' box size for each class."""
    _targets = [(ProtPicker3DTrain, ["diameters"]), (ProtPicker3DMasks, ["diameters"])]

    def show(self, form, *params):
        coords = form.protocol.inputCoordinates.get()
        if coords is None:
            form.showError("Select the input coordinates first.")
            return
        value = diameters_from_coordinates(coords)
        if not value:
            form.showError(f"The coordinate set {coords.getObjLabel() or ''} has no box size: type the diameters.")
            return
        form.setVar("diameters", value)
