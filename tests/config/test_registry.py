import pytest

from ember._registry import Registry, UnknownNameError


def test_register_create_list_and_did_you_mean() -> None:
    reg: Registry[int] = Registry("widget")

    @reg.register("double")
    def double(x: int = 1) -> int:
        return 2 * x

    assert reg.create("double", x=4) == 8
    assert reg.names() == ["double"] and "double" in reg and len(reg) == 1
    with pytest.raises(
        UnknownNameError, match=r"unknown widget 'doubel'; did you mean 'double'\? See `ember list widgets`"
    ):
        reg.get("doubel")
    with pytest.raises(TypeError, match=r"widget 'double' has no option 'y'"):
        reg.create("double", y=1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("double")(lambda: 0)
