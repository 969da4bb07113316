"""/v1/files: upload (multipart), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from pagefleet.platform.gateway.errors import bad_request, error_specs
from pagefleet.platform.gateway.files.schemas import FileDeleted, FileList, FileObject
from pagefleet.platform.gateway.files.service import FileService
from pagefleet.platform.gateway.input_guard import BODY_MEDIA_TYPE

_NOT_FOUND = error_specs({404: "No such file for this API key"})


class FilesController(Controller):
    path = "/v1/files"
    tags = ("files",)

    @post("/", status_code=200, opt={BODY_MEDIA_TYPE: RequestEncodingType.MULTI_PART.value}, responses=error_specs({
        400: "Missing file or bad purpose", 413: "Larger than the configured limit"}))
    async def upload(self, data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
                     files: NamedDependency[FileService], owner: NamedDependency[str]) -> FileObject:
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request("a multipart field `file` is required", param="file")
        purpose = data.get("purpose")
        if not isinstance(purpose, str):
            raise bad_request("a multipart field `purpose` is required", param="purpose")
        try:
            record = await files.create(owner, upload.filename, purpose, upload.file)
        finally:
            await upload.close()
        return FileObject.of(record)

    @get("/")
    async def list_files(self, files: NamedDependency[FileService], owner: NamedDependency[str],
                         purpose: FromQuery[str | None] = None, after: FromQuery[str | None] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 10_000) -> FileList:
        records = await files.list(owner, purpose, limit, after)
        page = [FileObject.of(r) for r in records[:limit]]
        return FileList(data=page, has_more=len(records) > limit,
                        first_id=page[0].id if page else None, last_id=page[-1].id if page else None)

    @get("/{file_id:str}", responses=_NOT_FOUND)
    async def retrieve(self, file_id: FromPath[str], files: NamedDependency[FileService],
                       owner: NamedDependency[str]) -> FileObject:
        return FileObject.of(await files.get(file_id, owner))

    @get("/{file_id:str}/content", responses=_NOT_FOUND, media_type="application/octet-stream")
    async def content(self, file_id: FromPath[str], files: NamedDependency[FileService],
                      owner: NamedDependency[str]) -> Stream:
        return Stream(await files.content(file_id, owner), media_type="application/octet-stream")

    @delete("/{file_id:str}", status_code=200, responses=_NOT_FOUND)
    async def delete_file(self, file_id: FromPath[str], files: NamedDependency[FileService],
                          owner: NamedDependency[str]) -> FileDeleted:
        await files.delete(file_id, owner)
        return FileDeleted(id=file_id)
