"""A client's own documents (a JSONL file or folder, libs.corpus) as UploadDocuments requests:
the way documents reach a service, instead of a path on the client's machine."""

from collections.abc import Iterator
from pathlib import Path

from embedforge.v1 import messages_pb2 as pb
from embedforge.v1 import taskgen_pb2 as api
from libs.corpus import read_documents
from libs.limits import MAX_MESSAGE_BYTES

DOCUMENTS_PER_MESSAGE = 100


def upload_requests(path: str | Path, job_id: str, collection: str = "") -> Iterator[api.UploadDocumentsRequest]:
    """The documents under ``path`` for ``job_id``, in messages well under the gRPC size limit."""
    request = api.UploadDocumentsRequest(job_id=job_id)
    for doc in read_documents(path):
        document = pb.Document(
            doc_id=doc.doc_id, collection=collection, title=doc.title, text=doc.text, metadata=doc.metadata, job_id=job_id
        )
        if request.documents and (
            len(request.documents) >= DOCUMENTS_PER_MESSAGE or request.ByteSize() + document.ByteSize() > MAX_MESSAGE_BYTES // 2
        ):
            yield request
            request = api.UploadDocumentsRequest()
        request.documents.append(document)
    if request.documents:
        yield request
