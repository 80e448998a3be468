"""OSCP 1.0 over SOAP 1.1 and 1.2, driven by the contract files in wsdl/ (see codec.py)."""

from service.oscp.v1.soap.codec import SoapCall, SoapCodec, SoapFault, SoapVersion

__all__ = ["SoapCall", "SoapCodec", "SoapFault", "SoapVersion"]
