pub struct Manifest;
